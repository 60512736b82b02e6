"""Probabilistic meta-learners: a support set becomes a predictive distribution, not a point."""
