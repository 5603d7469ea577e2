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
# The targets table: every section that has targets, in the order above, but the sweep extrapolated from a scaled-down
# sweep goes last, after the one measured in full.
TARGET_ORDER = tuple(sorted((section for section in SECTIONS if section.targets), key=lambda s: s is sweep.SECTION))
