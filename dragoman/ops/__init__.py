"""What an operator deploys beside dragoman: the Grafana dashboard (deploy/grafana)."""
