"""The churn-risk model: training, gate, scores (issue 15)."""
