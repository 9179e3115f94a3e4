"""The report: the figures of the study and `reports/report.md`."""
