"""A real DEAP genetic algorithm (OneMax on 60 bits) reporting to loopwatch.

    loopwatch run -- python examples/python/deap_loop.py --generations 40

With --no-variation, crossover and mutation are switched off: selection alone turns
the population into clones of one individual within a few generations, and loopwatch
raises DiversityCollapse.
"""

from __future__ import annotations

import argparse
import random
import time

from deap import algorithms, base, creator, tools

import loopwatch
import loopwatch.deap


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generations", type=int, default=40)
    parser.add_argument("--population", type=int, default=60)
    parser.add_argument("--no-variation", action="store_true")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds per generation")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    random.seed(args.seed)

    creator.create("FitnessMax", base.Fitness, weights=(1.0,))
    creator.create("Individual", list, fitness=creator.FitnessMax)
    toolbox = base.Toolbox()
    toolbox.register("bit", random.randint, 0, 1)
    toolbox.register("individual", tools.initRepeat, creator.Individual, toolbox.bit, 60)
    toolbox.register("population", tools.initRepeat, list, toolbox.individual)
    toolbox.register("evaluate", lambda ind: (sum(ind) / len(ind),))
    toolbox.register("mate", tools.cxTwoPoint)
    toolbox.register("mutate", tools.mutFlipBit, indpb=0.02)
    toolbox.register("select", tools.selTournament, tournsize=3)

    cxpb, mutpb = (0.0, 0.0) if args.no_variation else (0.6, 0.3)
    population = toolbox.population(n=args.population)
    hof = tools.HallOfFame(1)
    for individual in population:
        individual.fitness.values = toolbox.evaluate(individual)
    hof.update(population)

    for generation in range(args.generations):
        with loopwatch.iteration() as it:
            offspring = algorithms.varAnd(population, toolbox, cxpb, mutpb)
            for individual in offspring:
                if not individual.fitness.valid:
                    individual.fitness.values = toolbox.evaluate(individual)
            population = toolbox.select(offspring, k=len(population))
            hof.update(population)
            loopwatch.deap.record(it, population, hof)
            time.sleep(args.pause)
        loopwatch.gauge("best_fitness", hof[0].fitness.values[0], unit="1",
                        description="Fitness of the hall of fame's best individual")
        loopwatch.counter("evaluations_total", len(offspring), unit="{evaluation}",
                          description="Fitness evaluations run")
    print("best fitness %.3f after %d generations" % (hof[0].fitness.values[0], args.generations))
    loopwatch.done()


if __name__ == "__main__":
    main()
