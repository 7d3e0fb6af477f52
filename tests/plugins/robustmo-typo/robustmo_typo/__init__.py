"""Two plugins with a mistake each; robustmo must report both, not ignore them."""
