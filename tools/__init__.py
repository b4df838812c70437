"""Repository tools: the stages' DVC dependencies, the results page, the metrics view."""
