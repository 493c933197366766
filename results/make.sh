#!/usr/bin/env bash
# Re-makes the committed reference results, one command each:
#
#   results/make.sh quick-all               # demo faces: the main job's cells + JPEG, and its leaderboard
#   results/make.sh quick-celebahq          # held-out CelebA-HQ: Table I with every bypass and the LoRA
#                                           # ablations
#   results/make.sh cost-ladder             # held-out CelebA-HQ: the seven defenses up the attacker's cost
#                                           # ladder, the reference leaderboard and its figures
#   results/make.sh image-quality           # held-out CelebA-HQ: Tables II, IV and V
#   results/make.sh attgan-lora-1000-faces  # the AttGAN patch fitted on the paper's 1,000 faces
#   results/make.sh protect-photos          # `bench protect` on 20 photos composed from held-out
#                                           # CelebA-HQ faces, and on one 12 MP photo (its reports only)
#   results/make.sh transfer-identity       # held-out CelebA-HQ: the seven defenses against no bypass, JPEG
#                                           # and LoRA, with the transfer scenario and the identity metrics
#   results/make.sh facenet-agreement       # the identity metrics' FaceNet against OpenCV 4.8 running its
#                                           # graph, on 32 held-out CelebA-HQ faces ($OPENCV_PYTHON, or a
#                                           # virtual environment made for it under $RUNS)
#   results/make.sh released-fits           # the fits that come with bench (bench/released): the main job
#                                           # fitted anew on an empty cache, its fits and step times released
#   results/make.sh pgd-steps               # demo faces: RAW and DF-RAP with 10, 20 and 40 PGD steps, under
#                                           # no bypass, channel transforms and LoRA
#   results/make.sh all
#   results/make.sh tables                  # no run: every table and board again from the committed
#                                           # rows (after a change to `bench report` or the leaderboard)
#
# Runs go to $RUNS (default bench-results/reference/<name>); a finished run there (its
# run.json written) is reused and an interrupted one resumes, so the command can be run
# again after a stop. The CelebA-HQ faces are read from $DATA (default
# ../shared/data/celebahq). Each result keeps its runs' rows and provenance in runs/ (a
# leaderboard: in run/) and the tables made from them; never a CelebA-HQ face (the demo
# faces are the project's own: their grids and fitted patches are kept too).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-bench-results/reference}
DATA=${DATA:-../shared/data/celebahq}
CELEBAHQ=(--data "$DATA" --dataset celebahq)
QUALITY_METRICS='metrics=["l2","ssim","dsr"]'

# `bench run` itself does nothing on a finished run of the same plan; a finished run.json is
# checked here as well so that runs made by an earlier version (another plan id: other
# cache keys, the same numbers) are reused rather than refused
run() {  # run NAME ARGS...: `bench run ARGS` into $RUNS/NAME unless it has finished there
  local name=$1
  shift
  [ -f "$RUNS/$name/run.json" ] || bench run "$@" --output "$RUNS/$name"
}

keep_rows() {  # keep_rows NAME DEST: a run's rows, fit costs, provenance and report, no images
  mkdir -p "$2"
  cp "$RUNS/$1"/{cells.jsonl,costs.jsonl,run.json,report.md} "$2"/
  cp "$RUNS/$1"/loss_curve_*.json "$2"/ 2>/dev/null || true
}

leaderboard() {  # leaderboard NAME DEST: the board of run NAME in DEST, its rows in DEST/run
  rm -rf "$2/run"
  keep_rows "$1" "$2/run"
  board "$2"
}

report() {  # report DEST NAME...: the tables of runs NAME..., from their rows kept in DEST/runs
  local dest=$1
  shift
  rm -rf "$dest/runs"
  for name in "$@"; do keep_rows "$name" "$dest/runs/$name"; done
  tables "$dest"
}

tables() {  # tables DEST: DEST's tables from the rows in DEST/runs (read in name order)
  local dest=$1
  rm -f "$dest"/*.csv "$dest"/*.tex "$dest"/report.md "$dest"/fig5_*.png "$dest"/fig8_*.png  # a report's files
  bench report "$dest"/runs/* --output "$dest" --no-leaderboard  # boards: from complete runs, by `leaderboard`
}

board() {  # board DEST: DEST's leaderboard from the rows in DEST/run
  find "$1" -mindepth 1 -maxdepth 1 ! -name run -exec rm -rf {} +
  bench leaderboard "$1/run" --output "$1" --screenshot
}

quick_all() {
  run quick-all --defenses all --bypass none,jpeg,lora --generators all
  run quick-all-lb --defenses all --bypass none,jpeg,lora --set "$QUALITY_METRICS" \
    --set leakage.defenses=all --set leakage.bypasses=lora
  rm -rf results/quick-all  # replaced as a whole: grids and fitted patches too
  report results/quick-all quick-all
  cp "$RUNS/quick-all"/{examples,fig6,fig7}_*.png results/quick-all/ 2>/dev/null || true  # demo faces' grids
  cp -r "$RUNS/quick-all/fitted" results/quick-all/
  leaderboard quick-all-lb results/quick-all/leaderboard
}

quick_celebahq() {
  run run-a --defenses all --bypass none,jpeg,comdefend,ri,lora,gat,magat --generators all "${CELEBAHQ[@]}"
  run run-b1 --defenses all --bypass lora_r4,lora_r16,lora_r32,lora_ungated,lora_warning --generators attgan \
    "${CELEBAHQ[@]}"
  run run-b2 --defenses all --bypass lora_r4,lora_r16,lora_r32,lora_ungated --generators stargan "${CELEBAHQ[@]}"
  run run-b3 --defenses all --bypass lora_r4,lora_r16,lora_r32,lora_ungated --generators hisd "${CELEBAHQ[@]}"
  report results/quick-celebahq run-a run-b1 run-b2 run-b3
}

cost_ladder() {
  # every channel transform at every strength, ComDefend, and LoRA patching on 8 to 256 faces
  run run-ladder --defenses all --bypass ladder --generators all "${CELEBAHQ[@]}" --set "$QUALITY_METRICS"
  leaderboard run-ladder results/quick-celebahq/leaderboard
}

image_quality() {
  run run-c --defenses disrupting --bypass none,jpeg,comdefend,ri,lora --generators all "${CELEBAHQ[@]}"
  run run-d --defenses disrupting --bypass none,lora_warning,lora_warning_pixel --generators attgan \
    "${CELEBAHQ[@]}" --set 'scenarios=["standard"]'
  run run-e --defenses disrupting --bypass none,lora_warning,lora_warning_pixel --generators hisd \
    "${CELEBAHQ[@]}" --set 'scenarios=["standard"]'
  report results/quick-celebahq/image-quality run-c run-d run-e
}

attgan_lora_1000_faces() {
  # the paper's recipe: one epoch over 1,000 fine-tuning faces (the quick profile: four over 256)
  run run-g --defenses all --bypass lora --generators attgan "${CELEBAHQ[@]}" --set finetune_limit=1000 \
    --set bypasses.lora.epochs=1 --set 'scenarios=["standard"]'
  report results/quick-celebahq/attgan-lora-1000-faces run-g
}

protect_photos() {
  local out=$RUNS/protect-photos
  [ -f "$out/summary.json" ] || python benchmarks/protect_photos.py --out "$out" --data "$DATA"
  rm -rf results/protect-photos
  mkdir -p results/protect-photos/twelve-megapixels
  cp "$out/summary.json" "$out"/protected/report/{protect.md,protect.json,photos.csv} results/protect-photos/
  cp "$out"/big-protected/report/{protect.md,protect.json,photos.csv} results/protect-photos/twelve-megapixels/
}

transfer_identity() {
  run run-t --defenses all --bypass none,jpeg,lora --generators all "${CELEBAHQ[@]}" \
    --set 'scenarios=["standard","transfer"]'
  report results/quick-celebahq/transfer-identity run-t
  # Anti-Forgery with 500 Adam steps, as the Proactive Defense Benchmark re-ran it (public code: 100)
  run run-af500 --defenses antiforgery --bypass none,jpeg,lora --generators stargan,attgan "${CELEBAHQ[@]}" \
    --set defenses.antiforgery.steps=500 --set 'scenarios=["standard"]'
  report results/quick-celebahq/transfer-identity/antiforgery-500-steps run-af500
}

pgd_steps() {
  # the quick profile gives RAW and DF-RAP 40 PGD steps; their published setting is 10
  local steps
  for steps in 10 20 40; do
    run "pgd-steps-$steps" --defenses raw,dfrap --bypass none,jpeg,jpeg_q50,webp,resize,blur,lora --generators all \
      --set "$QUALITY_METRICS" --set 'scenarios=["standard"]' --set "defenses.raw.steps=$steps" \
      --set "defenses.dfrap.steps=$steps"
    report "results/pgd-steps/steps-$steps" "pgd-steps-$steps"
  done
}

released_fits() {
  # the main job's fits on the demo faces (LoRA, PG, ID-Guard, CMUA, and the transfer scenario's
  # universal fits), made anew on an empty cache so that every step's time is this machine's
  (export BENCH_CACHE=$RUNS/released-fits-cache && run released-fits --defenses all --bypass lora --refit)
  python -m bench.harness.released "$RUNS/released-fits" --into bench/released
}

facenet_agreement() {
  # OpenCV 4.10 and later refuse FaceNet's frozen graph; 4.8.1 wants numpy 1
  local python=${OPENCV_PYTHON:-$RUNS/opencv-4.8/bin/python}
  [ -x "$python" ] || { python3 -m venv "$RUNS/opencv-4.8" &&
    "$RUNS/opencv-4.8/bin/pip" install -q "opencv-contrib-python-headless==4.8.1.78" "numpy<2"; }
  mkdir -p results/identity
  python benchmarks/facenet_agreement.py --opencv-python "$python" --faces 32 --data "$DATA" \
    --out results/identity/facenet_agreement.json
}

[ $# -gt 0 ] || { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
for target in "$@"; do
  case $target in
    quick-all) quick_all ;;
    quick-celebahq) quick_celebahq ;;
    cost-ladder) cost_ladder ;;
    image-quality) image_quality ;;
    attgan-lora-1000-faces) attgan_lora_1000_faces ;;
    protect-photos) protect_photos ;;
    transfer-identity) transfer_identity ;;
    facenet-agreement) facenet_agreement ;;
    released-fits) released_fits ;;
    pgd-steps) pgd_steps ;;
    all) released_fits; quick_all; quick_celebahq; cost_ladder; image_quality; attgan_lora_1000_faces; protect_photos
      transfer_identity; facenet_agreement; pgd_steps ;;
    tables)  # no run: every committed table and board again from the committed rows
      for rows in results/*/runs results/*/*/runs; do [ ! -d "$rows" ] || tables "$(dirname "$rows")"; done
      for rows in results/*/leaderboard/run results/*/*/leaderboard/run; do [ ! -d "$rows" ] || board "$(dirname "$rows")"; done ;;
    *) echo "results/make.sh: unknown result '$target' (quick-all, quick-celebahq, cost-ladder, image-quality, attgan-lora-1000-faces, protect-photos, transfer-identity, facenet-agreement, released-fits, pgd-steps, all, tables)" >&2; exit 2 ;;
  esac
done
