"""Where the shared test data lies: ../shared beside the repository (as in CI)."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
FACES = SHARED / "faces" / "deepface"
LIVENESS = SHARED / "models" / "liveness"
