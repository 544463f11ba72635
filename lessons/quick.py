"""The test suite's sizes for the lessons and their answers, in one place.

A lesson is written at the sizes a learner runs (BERT-base's B=16, N=128, P=20; the shipped
MiniLM; a few hundred training sentences). The test suite runs every lesson in a few seconds by
replacing some of its top-level statements with smaller ones, listed here per lesson:
`{statement as the lesson writes it: the statement the quick run uses instead}`. Statements
compare as code (spacing and comments do not matter); one the lesson no longer has is an error
(`run_lesson.py`), so this table cannot silently fall behind a lesson.

    python lessons/run_lesson.py 07 --quick

`ANSWERS` does the same for the answers in solutions/NN_solutions.py, whose sizes are constants
at the top of the file (`STEPS = 50`).
"""

QUICK = {
    "01": {
        'B, N, P = 16, 128, 20': 'B, N, P = 2, 16, 4',
    },
    "02": {
        'B, N = 16, 128': 'B, N = 2, 24',
    },
    "03": {
        'cfg = preset("minilm")': 'cfg = preset("bert-tiny")',
        'B, N = 8, 64': 'B, N = 2, 8',
    },
    "04": {
        'show_renames(sd, cfg, n=24)': 'show_renames(sd, cfg, n=12)',
    },
    "05": {
        'model = random_gpt2(preset("gpt2").replace(num_hidden_layers=4))': 'model = random_gpt2(preset("gpt2-tiny"))',
        'B, N, steps = 2, 16, 8': 'B, N, steps = 2, 6, 4',
        'folder = decoder_dir(RUNS / "decoder")':
            'from _course import TINY_DECODER; folder = decoder_dir(RUNS / "decoder-tiny-05", TINY_DECODER, show_progress=False)',
    },
    "06": {
        'cosines = pool_after_slicing(encoder, P=20)': 'cosines = pool_after_slicing(encoder, P=4)',
        'tr = trace_example(16, 128)': 'tr = trace_example(2, 16)',
    },
    "07": {
        'B, N, P = 16, 128, 20': 'B, N, P = 2, 16, 4',
        'cfg = preset("minilm")': 'cfg = preset("bert-tiny")',
    },
    "08": {
        'rows = once_vs_per_row((1, 8, 32), repeat=5)': 'rows = once_vs_per_row((1, 8), repeat=1)',
        'same_gradients(B=8)': 'same_gradients(B=2)',
        'tr = trace_example(16, 128, 20)': 'tr = trace_example(2, 16, 4)',
    },
    "09": {
        'enc = BertEncoder(preset("minilm")).eval()': 'enc = BertEncoder(preset("bert-tiny")).eval()',
        'B, N, P = 8, 64, 20': 'B, N, P = 2, 8, 4',
        'B = 8': 'B = 2',
        'shapes = ((128, 20), (32, 64))': 'shapes = ((16, 4), (8, 16))',
    },
    "10": {
        'n_train, n_heldout, P, batch_size = 480, 200, 16, 16': 'n_train, n_heldout, P, batch_size = 8, 8, 4, 8',
        'accuracy = short_run(model, train_loader, heldout_loader, expect_gain=0.1)':
            'accuracy = short_run(model, train_loader, heldout_loader, expect_gain=None)',
        'scores = recipe_effect(tok, train, heldout, P, batch_size=8)':
            'scores = recipe_effect(tok, train, heldout, P, batch_size=8, seeds=(0,))',
        'beyond_spread = verdict(scores)': 'beyond_spread = verdict(scores, check=False)',
    },
    "11": {
        'P, n_train, n_dev, batch_size = 8, 1200, 200, 16': 'P, n_train, n_dev, batch_size = 4, 8, 8, 8',
        'task_model, before, start = train_prefix(model, tok, batch, P, n_train, n_dev, batch_size)':
            'task_model, before, start = train_prefix(model, tok, batch, P, n_train, n_dev, batch_size, check=False)',
        'after = mass_moved(model, batch, before, start)': 'after = mass_moved(model, batch, before, start, check=False)',
    },
    "12": {
        'cfg = preset("gpt2").replace(num_hidden_layers=2)': 'cfg = preset("gpt2-tiny")',
        'P, N, steps = 16, 16, 8': 'P, N, steps = 3, 6, 5',
        'folder = decoder_dir(RUNS / "decoder")':
            'from _course import TINY_DECODER; folder = decoder_dir(RUNS / "decoder-tiny-12", TINY_DECODER, show_progress=False)',
        'prefix, before, after = train_prefix(decoder, tok, positive, P=10, steps=60)':
            'prefix, before, after = train_prefix(decoder, tok, positive, P=3, steps=3)',
    },
    "14": {
        'seed_003_drops_the_cache(steps=8)': 'seed_003_drops_the_cache(steps=4)',
    },
    "15": {
        'model = tiny_llama(layers=3)': 'model = tiny_llama(layers=2)',
        'ids = torch.randint(1, model.config.vocab_size, (2, 12))':
            'ids = torch.randint(1, model.config.vocab_size, (2, 6))',
        'generation(model, 16)': 'generation(model, 6)',
        'folder = decoder_dir(RUNS / "decoder")':
            'from _course import TINY_DECODER; folder = decoder_dir(RUNS / "decoder-tiny-15", TINY_DECODER, show_progress=False)',
    },
    "16": {
        'folder = decoder_dir(RUNS / "decoder")':
            'from _course import TINY_DECODER; folder = decoder_dir(RUNS / "decoder-tiny-16", TINY_DECODER, show_progress=False)',
        'judge, accuracy = quick_judge(steps=30)': 'judge, accuracy = quick_judge(steps=2, n_heldout=8, expect=None)',
        'gaps = preferences(folder, checkpoints, tok)': 'gaps = preferences(folder, checkpoints, tok, n=4)',
        'shares = judged(folder, checkpoints, tok, judge)': 'shares = judged(folder, checkpoints, tok, judge, n=4)',
        'told_apart = against_each_other(folder)': 'told_apart = against_each_other(folder, n=4, steps=2, n_dev=4)',
        'assert told_apart["train"] >= 0.9 and told_apart["held out"] <= 0.65, told_apart':
            'assert 0 <= told_apart["held out"] <= 1',  # two steps on a noise decoder: nothing to assert but the range
        'assert reach["the decoder\'s embeddings"] < 0.1, reach': 'assert all(0 <= r <= 1 for r in reach.values())',
    },
}

ANSWERS = {
    "05": {"STEPS = 50": "STEPS = 10"},
    "06": {"P_TRY_1 = 20": "P_TRY_1 = 4"},
    "08": {"BATCHES, REPEAT = (1, 8, 32, 128), 3": "BATCHES, REPEAT = (1, 128), 1"},
    "12": {'CONFIG = preset("gpt2").replace(num_hidden_layers=2)': 'CONFIG = preset("gpt2-tiny")',
           "P, N, STEPS = 16, 16, 8": "P, N, STEPS = 3, 6, 5"},
    "16": {"SMALL_DECODER = False": "SMALL_DECODER = True", "STEPS, N_DEV = 60, 100": "STEPS, N_DEV = 3, 8"},
}
