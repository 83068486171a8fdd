"""Pictures of a model: its network as a graph (plots.network, DOT and Graphviz) and its
training curves per epoch (plots.curves, matplotlib)."""
