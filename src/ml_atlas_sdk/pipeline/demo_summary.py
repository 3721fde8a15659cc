"""Print where the demo's results are and how to look at them (`make demo`)."""
from __future__ import annotations

import json

from ml_atlas_sdk.pipeline.paths import REPORTS


def main() -> None:
    upload = REPORTS / "upload.json"
    if upload.is_file():
        info = json.loads(upload.read_text())
        print(f"\nMLflow run id: {info.get('run_id')} (experiment {info.get('experiment')!r})")
        print("Look at it with: mlflow ui --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlartifacts")
    else:
        print(f"\nReports are in {REPORTS}/; compare settings with `dvc exp show`.")


if __name__ == "__main__":
    main()
