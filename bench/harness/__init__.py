"""The harness: what runs plugins and reports on them. A run is a plan of cached steps
(`plan`, `steps`) run by an executor (`executors`: local or Dask) over a shared,
content-addressed cache (`cache`), with rows written cell by cell (`results`); then
the paper's tables (`report`), the leaderboard (`leaderboard`, `leaderboard_html`),
plugin checks (`validate`) and the command line (`cli`). Nothing imports the harness.
"""
