"""Paper 001's decoder widths were found by a search over the write-up's parameter table
(lesionbench/models/mobilenet_unet.py explains it); this re-runs its structured part."""

from __future__ import annotations

import itertools

from lesionbench.models import create_model


def decoder_search(target: int = 4_771_585, skips: tuple[int, int, int] = (96, 32, 24)) -> list[tuple]:
    """Decoder configurations whose trainable parameters (encoder frozen) equal ``target``."""
    widths = [16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512, 640, 768, 1024]
    s3, s2, s1 = skips
    found = []
    for k, tb, cb, bn in itertools.product((2, 3, 4), (0, 1), (0, 1), (0, 1)):
        for u1, o1, o2, o3 in itertools.product(widths, repeat=4):
            if not u1 >= o1 >= o2 >= o3:  # monotone; up2/up3 keep the conv width (u2=o1, u3=o2)
                continue
            p = o3 + 1
            for cin, u, s, o in ((1280, u1, s3, o1), (o1, o1, s2, o2), (o2, o2, s1, o3)):
                p += cin * u * k * k + tb * u + (u + s) * o * 9 + cb * o + 2 * bn * o
            if p == target:
                found.append((k, bool(tb), bool(cb), bool(bn), (u1, o1, o2), (o1, o2, o3)))
    return found


def test_the_chosen_decoder_is_an_exact_solution_and_the_model_has_it() -> None:
    found = decoder_search()
    chosen = (2, True, True, True, (512, 256, 128), (256, 128, 64))  # k2, ConvT bias, conv bias, BN
    assert chosen in found
    model = create_model("mobilenet-unet", weights="none")
    assert sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.encoder.parameters()) == 4_771_585
