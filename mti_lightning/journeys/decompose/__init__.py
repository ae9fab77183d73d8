"""Decomposed attributions: signed NMF of one unit's E+ and E- parts over a data set."""
