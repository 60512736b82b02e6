"""Meta-reinforcement learning: task distributions, policies, rollouts and meta-RL algorithms."""
