"""The benchmark's sections, in the order they run and RESULTS.md shows them.

efficiency reads the epoch section's times and sweep reads memory's evaluation cost, so each comes after the section
it reads.
"""

from benchmarks.sections import (
    efficiency,
    epoch,
    families,
    full_sweep,
    jobs,
    likelihood,
    memory,
    small_batch,
    startup,
    sweep,
    tracking,
)

SECTIONS = (
    epoch.SECTION,
    efficiency.SECTION,
    tracking.SECTION,
    memory.SECTION,
    startup.SECTION,
    sweep.SECTION,
    full_sweep.SECTION,
    jobs.SECTION,
    families.SECTION,
    small_batch.SECTION,
    likelihood.SECTION,
)
# The targets table puts the sweep measured in full before the one extrapolated from a scaled-down sweep.
TARGET_ORDER = (
    epoch.SECTION,
    efficiency.SECTION,
    tracking.SECTION,
    memory.SECTION,
    startup.SECTION,
    full_sweep.SECTION,
    sweep.SECTION,
)
