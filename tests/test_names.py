import pandas as pd

from vae_sweep import names
from vae_sweep.analysis.reproduce import read_history


def test_learning_curves_pair_train_with_test_under_one_section():
    assert names.EPOCH_METRICS[:2] == ("loss/recon/train", "loss/recon/test")
    assert names.TEST_LOSS == "loss/test" and names.EPOCH_TIME == "time/epoch_s"
    assert not [key for key in names.EPOCH_METRICS if key.startswith("final/")]


def test_old_metric_names_map_to_the_new_ones():
    old = {"test/loss": 3.0, "final/test/loss": 3.0, "epoch_time_s": 1.0, "quality/fid": 7.0}
    assert names.current_metrics(old) == {"loss/test": 3.0, "time/epoch_s": 1.0, "quality/fid": 7.0}
    assert names.current_metric("metrics.final/train_time_s") == "metrics.time/train_s"
    assert names.every_name("loss/test") == ("loss/test", "test/loss")
    assert names.is_machine_reading("epoch_time_s") and names.is_machine_reading("time/classifier_train_s")
    assert names.is_machine_reading("system/cpu_utilization_percentage")
    assert not names.is_machine_reading("loss/test")


def test_a_table_of_old_and_new_runs_gets_one_column_per_metric():
    runs = pd.DataFrame(
        {
            "run_id": ["old", "new"],
            "metrics.final/test/loss": [5.0, None],
            "metrics.test/loss": [5.0, None],
            "metrics.loss/test": [None, 4.0],
        }
    )
    current = names.current_metrics(runs)
    assert list(current.columns) == ["run_id", "metrics.loss/test"]
    assert current["metrics.loss/test"].tolist() == [5.0, 4.0]
    assert "metrics.test/loss" in runs  # the caller's frame is left as it was


def test_an_old_history_csv_reads_under_the_new_names(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,train/loss,test/loss,kl_weight,epoch_time_s\n1,5.5,6.5,1,0.3\n")
    assert read_history(path) == [
        {"epoch": 1.0, "loss/train": 5.5, "loss/test": 6.5, "kl_weight": 1.0, "time/epoch_s": 0.3}
    ]
