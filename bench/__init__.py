"""Side-by-side benchmark of cargohold and CNCF Distribution: ``make bench``."""
