"""The reporting wing: reading finished runs and turning their rows into tables and
boards. It needs pandas and numpy, never torch.

- `runs`: a run folder read back (rows, fit costs, its `RunRecord`);
- `tables`: the table functions, each returning a `Table` (values and the ends of
  their intervals, from one bootstrap);
- `specs`: the report as a list of table specs, in the order it prints them;
- `render`: one renderer for Markdown, CSV and LaTeX, with `±`;
- `report`: `bench report`;
- `board` (the leaderboard's model and ranking), `board_pages` (its Markdown, JSON and
  CSV), `board_html` (its HTML page and screenshot), `leaderboard` (writes them).
"""
