"""vaecli-shapes: a third-party vaecli plugin (dataset ``shapes``, architecture ``resconv``,
likelihood ``logistic``, objective ``cyclical``, callback ``csv``). It imports only
``vaecli.plugin``, vaecli's public plugin contract."""

__version__ = "0.1.0"
