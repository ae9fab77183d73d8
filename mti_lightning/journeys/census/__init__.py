"""The inhibition census: every unit of chosen layers ranked by tension, with a page each."""
