"""Reporting: run folders -> pandas (collect), tables (CSV / Markdown / LaTeX), figures, claims report.

The paper (arXiv 2405.03192) has 5 tables and 7 figures; these are the names of ours, one per slot, so the
workflow and the writers agree on every output path. Heavy imports stay in the submodules; the defaults the
CLI shows live here for that reason.
"""
TOLERANCE_PP = 1.0  # the savings target: the scratch runs' mean final top-1 minus this (pp)
BAND = (30.0, 70.0)  # E3 (C5): shifts whose mean zero-shot top-1 (%) lies outside are dropped (config e3.band overrides)
TABLES = ("table1_adaptation", "table2_pretraining_scale", "table3_coco", "table4_ablations", "table5_efficiency")
FIGURES = ("fig1_linear_vs_nonlinear", "fig2_pretraining_scale", "fig3_adaptation_capacity", "fig4_architecture",
           "fig5_stage_training", "fig6_accuracy_vs_cost", "fig7_efficiency")
