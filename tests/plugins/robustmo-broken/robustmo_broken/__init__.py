raise ImportError("robustmo_broken needs a library that is not installed (on purpose)")
