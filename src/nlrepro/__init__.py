"""nlrepro: a DVC workbench reproducing Nested Learning (HOPE) against Titans and Transformer++."""
