"""The whole job's throughput over time, as a line chart (plotext)."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class ThroughputChart(PlotextPlot):
    def show(self, points: list[tuple[float, float]]) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("job throughput (MiB/s)")
        plt.xlabel("seconds")
        if points:
            xs = [p[0] for p in points]
            ys = [p[1] / 2**20 for p in points]
            plt.plot(xs, ys, marker="braille")
            plt.ylim(0, max(ys) * 1.1 or 1)
        self.refresh()
