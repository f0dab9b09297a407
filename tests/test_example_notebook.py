"""examples/dream.ipynb runs top to bottom (at a small size) and shows its pictures, so it never rots."""
import nbformat
from nbclient import NotebookClient

from conftest import ROOT, SHARED


def test_example_notebook_runs_and_shows_every_picture(monkeypatch):
    path = ROOT / 'examples' / 'dream.ipynb'
    nb = nbformat.read(path, as_version=4)
    monkeypatch.setenv('CLASSICDREAM_EXAMPLE_SCALE', '0.15')
    monkeypatch.setenv('CLASSICDREAM_EXAMPLE_ITER_N', '1')
    monkeypatch.setenv('CLASSICDREAM_IMAGES', str(SHARED / 'images'))
    client = NotebookClient(nb, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': str(path.parent)}})
    client.execute()                  # raises CellExecutionError, with the cell and its traceback, on any error
    shown = [o for cell in nb.cells if cell.cell_type == 'code' for o in cell.get('outputs', [])
             if 'image/jpeg' in o.get('data', {})]
    assert len(shown) == 9            # sky, its dream, the 3b/5x5_reduce dream, 3 zoom frames, guide, guided, class
