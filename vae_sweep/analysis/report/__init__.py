"""The comparison report: select runs (select), tabulate (table), conclude (findings), draw (plots), write (render)."""
