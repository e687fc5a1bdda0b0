"""A persistent job queue for generation: one JSON file per job in the outputs folder, and one
worker that runs them through `FramePackPipeline` (the web UI and `framepack queue` share it).

    queue = JobQueue("outputs")
    job = queue.add(GenerationOptions(prompt="the camera pans right", seconds=2))
    Worker(queue).run(until_empty=True)   # -> outputs/<job.id>.mp4
"""

from framepack.queue.store import STATUSES, JobQueue, QueueJob, check_image_file
from framepack.queue.worker import Pipelines, Worker

__all__ = ["STATUSES", "JobQueue", "Pipelines", "QueueJob", "Worker", "check_image_file"]
