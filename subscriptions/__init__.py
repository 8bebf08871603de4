"""Products, product blocks, resource types and customer subscriptions with their lifecycle."""
