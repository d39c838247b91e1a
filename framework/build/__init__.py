"""From a recipe to objects: plugins are loaded, every component is looked up by name in the
registry, the recipe is checked against them (phase two of validation), the model is built.

    plugins.py    finding plugins: built-in, installed (entry points), recipe files
    registry.py   components by kind and name, and which plugin gave each one
    components.py recipe slots -> components -> model, optimizer, schedule, ...
    validate.py   everything a run needs, checked before any work (all problems at once)
    describe.py   what was built, in words (components table, parameter count)
    costs.py      what it costs: FLOPs per token, training memory
    devices.py    CPU, CUDA or MPS
"""
