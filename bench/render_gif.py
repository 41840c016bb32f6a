"""One greedy and one sampled episode of a trained checkpoint, side by side, as a small GIF.

    python bench/render_gif.py runs/bench/LunarLander-v3-err-s1000/checkpoint.pt -o bench/lander.gif

Uses gymnasium's rgb_array rendering and Pillow (which matplotlib brings); the episodes run on an
evaluation seed (>= 2^31), never one used in training.
"""

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import policy_annealing as pa  # noqa: E402


def episode_frames(agent, cfg, seed, greedy, generator, every):
    """Frames (every `every`-th, and the last) and the return of one episode, run by the
    module's own sampler so the policy acts exactly as in training and evaluation."""
    env = gym.make(cfg.env, render_mode="rgb_array", **cfg.env_kwargs)
    env = gym.wrappers.RenderCollection(env)
    batch = pa.sample_episodes([env], agent, [seed], 1, generator, greedy=greedy)
    frames = env.render()
    env.close()
    return frames[::every] + frames[-1:], float(batch.returns.sum())


def panel(frame, text, scale):
    image = Image.fromarray(frame).resize(
        (int(frame.shape[1] * scale), int(frame.shape[0] * scale))
    )
    ImageDraw.Draw(image).text((6, 4), text, fill=(255, 255, 255))
    return image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--output", default="bench/lander.gif")
    parser.add_argument("--seed", type=int, default=2**31 + 7, help="env seed of both episodes")
    parser.add_argument("--every", type=int, default=3, help="keep every N-th frame")
    parser.add_argument("--scale", type=float, default=0.5, help="resize factor of each panel")
    args = parser.parse_args(argv)
    agent, cfg = pa.load(args.checkpoint)
    generator = torch.Generator().manual_seed(args.seed)
    episodes = [
        (mode, *episode_frames(agent, cfg, args.seed, mode == "greedy", generator, args.every))
        for mode in ("greedy", "sampled")
    ]
    length = max(len(frames) for _, frames, _ in episodes)
    gif = []
    for i in range(length):  # the shorter episode holds its last frame
        panels = [
            panel(frames[min(i, len(frames) - 1)], f"{mode}: return {total:.0f}", args.scale)
            for mode, frames, total in episodes
        ]
        joined = Image.new("RGB", (sum(p.width for p in panels), panels[0].height))
        for k, image in enumerate(panels):
            joined.paste(image, (k * panels[0].width, 0))
        gif.append(joined.quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=0))
    gif[0].save(
        args.output,
        save_all=True,
        append_images=gif[1:],
        duration=50 * args.every // 2,
        loop=0,
        optimize=True,
    )
    size = Path(args.output).stat().st_size / 2**20
    print(
        f"wrote {args.output}: {length} frames, {size:.2f} MB; "
        + ", ".join(f"{mode} return {total:.1f}" for mode, _, total in episodes)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
