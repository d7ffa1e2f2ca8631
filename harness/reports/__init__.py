"""``vlbench compare``: run directories to tables, significance tests, plots and a self-contained HTML report.

One concept per module: collect (read runs), aggregate (split check, mean ± std over seeds), significance
(paired tests), tables (CSV/Markdown/LaTeX/HTML), plots (matplotlib), html (the shareable page), report (all
of it for the CLI).
"""
