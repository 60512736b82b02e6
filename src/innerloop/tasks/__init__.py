"""Episodes and how they are drawn: seeded vectorized sampling, fixed evaluation sets."""

from innerloop.tasks.episodes import Episode, Episodes
from innerloop.tasks.fixed import FixedEpisodes
from innerloop.tasks.gp_functions import GaussianProcessPlan, GaussianProcessTasks
from innerloop.tasks.regression import RegressionPlotTasks, SinusoidPlan, SinusoidTasks
from innerloop.tasks.sampler import EpisodeIndices, EpisodeSampler, check_episode_shape

__all__ = ["Episode", "EpisodeIndices", "EpisodeSampler", "Episodes", "FixedEpisodes", "GaussianProcessPlan",
           "GaussianProcessTasks", "RegressionPlotTasks", "SinusoidPlan", "SinusoidTasks",
           "check_episode_shape"]
