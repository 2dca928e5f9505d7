"""ablation stage."""
