"""TF1 graphs: Saver checkpoints, frozen GraphDefs and fixed-length SavedModels, recognised cell by cell."""
