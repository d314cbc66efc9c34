"""Branch-and-bound: complete verification by splitting the problem into subdomains that bound better."""
