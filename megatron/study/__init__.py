"""The data-efficiency study (issue 12): baseline vs curriculum vs random-LTD vs both, at several data budgets.

``plan``     the configuration, the cases and what each run will do (DeepSpeed JSON, flags, schedule simulation);
``prepare``  corpus (Debian documentation packages), tokenizer, token files, difficulty analysis, offline tasks;
``runner``   one subprocess per stage (pretrain_gpt.py, tools/eval_gpt.py, lm-eval), resumable via ``done.json``;
``curves``   the TensorBoard scalars of a run as curves; tokens needed to reach a target loss (interpolated);
``report``   the table, the plots and the conclusion, computed from the measured numbers.

Entry point: ``tools/data_efficiency_study.py`` (``examples_deepspeed/data_efficiency/study_cpu.sh``).
"""
