"""Private room of jaxmlp (see the docs' design page)."""
