"""Attribution: relevance propagation over the traced Graph, heatmaps and faithfulness metrics."""
