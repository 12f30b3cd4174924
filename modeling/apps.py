from django.apps import AppConfig


class ModelingConfig(AppConfig):
    name = "modeling"
    verbose_name = "Modeling (what we learn)"

    def ready(self) -> None:
        active_serving_register()


def active_serving_register() -> None:
    """Put modeling's chooser into annotation's registry for every policy that needs a model.

    annotation must not import modeling (import boundary), so modeling plugs itself in; `random`
    stays annotation's own SQL.
    """
    from annotation.services import PAIR_CHOOSERS
    from elicitation.models import Study
    from modeling.serving import pair_choose_model

    for policy in Study.SelectionPolicy.values:
        if policy != Study.SelectionPolicy.RANDOM:
            PAIR_CHOOSERS[policy] = pair_choose_model
