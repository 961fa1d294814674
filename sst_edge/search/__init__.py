"""Hardware-aware search over a trained supernet, launched as an NNI experiment under a budget.

- `settings.SearchSettings`: what a search takes (torch-free); `budget`: the cost limit as an NNI
  constraint; `experiment.run_search`: the experiment, the random baseline and the re-scoring;
  `trials`: one candidate's score; `report`: trials.csv, pareto.png and the summary.
"""
