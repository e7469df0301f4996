"""The Streamlit leaderboard: ``data`` loads result files, ``tables`` computes the views.

Both are plain pandas, testable without Streamlit; ``app.py`` only lays them out. Nothing
here imports or executes submitted code: submissions are JSON and CSV files.
"""
