"""Side-by-side benchmark of kgw, Jupyter Kernel Gateway 3.0.1 and a direct ZeroMQ client."""
