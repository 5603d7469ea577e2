"""The comparison report: select runs (select), tabulate (table), conclude (findings), draw (plots), compose (document),
write (render); cli puts them together."""
