"""Scheduled recordings on the node (issue 19): held jobs kept on disk, started on the node's own clock.

    book = Book(data_dir / BOOK_FILE)          # scheduled_jobs.json: every held job, written atomically
    runner = ScheduleRunner(book, execution, recovered, ring)
    await runner.run(stop)                     # sync at start, on nudge() (cmd/job {"scheduled": true}) and every 60 s;
                                               # starts each job at its start_at whether or not the hub is reachable

`timing` decides (pure): when to wake, whether a held job is still waiting, to start, or missed.
"""

from hark_fleet.node.schedule.book import BOOK_FILE, Book, HeldJob
from hark_fleet.node.schedule.runner import ScheduleRunner

__all__ = ["BOOK_FILE", "Book", "HeldJob", "ScheduleRunner"]
