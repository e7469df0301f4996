"""Raw-pixel patch nearest neighbour: the sanity baseline every method must beat."""
