"""Small helpers of the training loop: metric writers and the mixed-batch preview."""
