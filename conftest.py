"""pytest set-up for the whole repository (tests/ and `pytest --nbval notebooks/`).

nbval 0.11 executes each cell with `store_history=False`. IPython decides whether a trailing
`;` silences a cell's last value by reading the input history, so under nbval a cell that
ends in `ax.legend();` also outputs `<matplotlib.legend.Legend at 0x...>`, which Jupyter,
nbconvert and Colab (and so the committed outputs) do not. Executing with history on makes
nbval run cells exactly as Jupyter does. Only execution counts differ, which nbval ignores.
"""


def pytest_configure(config):
    try:
        from nbval.kernel import RunningKernel
    except ImportError:  # nbval not installed: nothing to adjust
        return
    if getattr(RunningKernel.execute_cell_input, "_minbert_store_history", False):
        return

    def execute_cell_input(self, cell_input, allow_stdin=None):
        return self.kc.execute(cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False)

    execute_cell_input._minbert_store_history = True
    RunningKernel.execute_cell_input = execute_cell_input
