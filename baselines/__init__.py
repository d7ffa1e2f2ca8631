"""The region side of vlbench: Faster R-CNN region features and the frozen-grid baseline (issue: region baseline)."""
