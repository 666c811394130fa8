"""A real Optuna study reporting each trial to loopwatch.

    loopwatch run -- python examples/python/optuna_loop.py --trials 60

The objective scores a moving-average crossover on a synthetic price series; trials
whose windows cross are pruned, and a few fail outright, as real objectives do.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import optuna

import loopwatch
import loopwatch.optuna


def prices(n: int = 400, seed: int = 3) -> list:
    rng = random.Random(seed)
    series, price = [], 100.0
    for i in range(n):
        price *= math.exp(0.0004 + 0.01 * math.sin(i / 25.0) * 0.2 + rng.gauss(0, 0.01))
        series.append(price)
    return series


PRICES = prices()


def sharpe(fast: int, slow: int) -> float:
    returns = []
    for t in range(slow, len(PRICES) - 1):
        fast_ma = sum(PRICES[t - fast:t]) / fast
        slow_ma = sum(PRICES[t - slow:t]) / slow
        position = 1.0 if fast_ma > slow_ma else 0.0
        returns.append(position * (PRICES[t + 1] / PRICES[t] - 1.0))
    mean = sum(returns) / len(returns)
    var = sum((r - mean) ** 2 for r in returns) / len(returns)
    if var == 0:
        raise ValueError("no return variance")
    return mean / math.sqrt(var) * math.sqrt(252)


def objective(trial: optuna.Trial) -> float:
    fast = trial.suggest_int("fast", 2, 40)
    slow = trial.suggest_int("slow", 5, 120)
    if fast >= slow:
        raise optuna.TrialPruned()
    if trial.suggest_float("leverage", 0.5, 2.0) > 1.95:
        raise RuntimeError("margin call")
    return sharpe(fast, slow)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--pause", type=float, default=0.0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1))

    def slow_objective(trial: optuna.Trial) -> float:
        time.sleep(args.pause)
        return objective(trial)

    study.optimize(
        slow_objective,
        n_trials=args.trials,
        callbacks=[loopwatch.optuna.Callback()],
        catch=(RuntimeError, ValueError),
    )
    print("best sharpe %.3f with %s" % (study.best_value, study.best_params))
    loopwatch.done()


if __name__ == "__main__":
    main()
