"""The harness: what runs plugins and reports on them. A run is a plan of cached steps
(`plan`, `steps`) run by an executor (`executors`: local or Dask) over a shared,
content-addressed cache (`cache`, read through to the fits released with bench:
`released`), estimated step by step (`estimates`), with rows written cell by cell
(`results`); the files runs read, checked by their hashes (`downloads`); then
the reporting wing (`reporting`: the paper's tables and the leaderboard, read from
finished runs without torch), plugin checks (`validate`) and the command line (`cli`).
It imports no method (it finds them through the registry), and nothing imports it.
"""
