"""Episodes and how they are drawn: seeded vectorized sampling, fixed evaluation sets."""

from innerloop.tasks.episodes import Episode, Episodes
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.regression import SinusoidPlan, SinusoidTasks
from innerloop.tasks.sampler import EpisodeIndices, EpisodeSampler, check_episode_shape

__all__ = ["Episode", "EpisodeIndices", "EpisodeSampler", "Episodes", "FixedEpisodes", "SinusoidPlan", "SinusoidTasks",
           "check_episode_shape"]
