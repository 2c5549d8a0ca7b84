"""The fairchem-core 2.x host: UMA (eSCN-MD with mixtures of linear experts) and the 2.x eSEN models.

fairchem 2 has no OCP trainer: models are hydra ``_target_`` configs, training is torchtnt units run by
``fairchem -c config.yaml``, and a trained model is an ``MLIPInferenceCheckpoint`` (``model_config``,
``model_state_dict``, ``ema_state_dict``, ``tasks_config``) read by ``load_predict_unit`` and
``FAIRChemCalculator``. Modules here import fairchem 2 and are never imported beside fairchem 1.x
(:mod:`fairchem_prune.hosts`):

* :mod:`.checkpoints`: reading, checking and writing inference checkpoints;
* :mod:`.escn_md`: the block layout of the eSCN-MD backbones (the adapter of this host);
* :mod:`.slicing`: block reduction of a checkpoint, both weight sets;
* :mod:`.commands`: the ``fairchem-prune`` commands of this host.
"""
