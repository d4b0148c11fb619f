"""Progress in a log: plain lines where tqdm's bar would be one unreadable (or no) line."""

from __future__ import annotations

import io

from study.progress import LineProgress, epoch_lines, progress


def test_a_log_gets_a_line_per_interval_with_what_is_left_and_a_last_line():
    out = io.StringIO()
    bar = LineProgress(total=10, desc="ablation wd", unit="cell", interval=3600, file=out)
    bar.n = 4
    bar.refresh()
    assert out.getvalue() == "", "at most one line per interval"
    bar.interval = 0
    bar.set_postfix(best="0.9123", pruned=2)
    bar.refresh()
    bar.refresh()  # nothing new: no second line
    (line,) = out.getvalue().splitlines()
    assert line.startswith("ablation wd: 4/10 cells, 00:00 elapsed, about 00:00 left (best 0.9123, pruned 2)")
    bar.n = 10
    bar.close()
    assert (
        out.getvalue().splitlines()[-1] == "ablation wd: 10/10 cells, 00:00 elapsed (best 0.9123, pruned 2)"
    )


def test_without_a_terminal_progress_is_lines_and_epochs_are_printed(capsys):
    assert isinstance(progress(3, "trials", "trial"), LineProgress)  # pytest's capture is no terminal
    observe = epoch_lines("stage 1", 12)
    observe({"epoch": 3, "train_loss": 0.5, "val_acc": 0.91, "ff_ratio": 0.001, "lr": 0.1})
    assert (
        capsys.readouterr().err == "stage 1: epoch 3/12, train_loss 0.5000, val_acc 0.9100, ff_ratio 0.0010\n"
    )
