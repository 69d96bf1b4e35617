"""Tests for jaxmlp.sklearn: scikit-learn's own estimator checks, agreement with scikit-learn's
MLPs (one step from the same weights, accuracy, R^2), and the scikit-learn workflow."""

from __future__ import annotations

import pickle
import warnings

import jax
import numpy as np
import pytest
from sklearn import neural_network
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_digits, load_iris, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from jaxmlp._engine.step import TRACE_COUNTS
from jaxmlp.sklearn import MLPClassifier, MLPRegressor

# Small settings for the estimator checks, which call fit a few hundred times on many shapes.
# alpha=0: the penalty's scale depends on the row count and l2 is static in jaxmlp.fit, so with
# alpha > 0 every row count compiles its own program; with alpha=0 the row-count buckets share.
SMALL = dict(
    hidden_layer_sizes=(8,), max_iter=30, learning_rate_init=0.01, alpha=0.0, random_state=0
)


def _expected_failed_checks(estimator) -> dict[str, str]:
    # None: check_sample_weight_equivalence_on_dense_data (weighted vs repeated rows to 1e-7),
    # which float32 arithmetic could not meet, passes since float64 data trains in float64.
    return {}


@pytest.mark.slow
@parametrize_with_checks(
    [MLPClassifier(**SMALL), MLPRegressor(**SMALL)], expected_failed_checks=_expected_failed_checks
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


# -- the same step as scikit-learn ---------------------------------------------------------------
# Four features and eight hidden units, as in the iris tests: initialising a new weight shape
# compiles a random-number program, so the tests share shapes where they can.
def _problem(problem: str):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4))
    if problem == "regression":
        return X, np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    if problem == "regression-2":
        return X, np.column_stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]])
    if problem == "binary":
        return X, np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    if problem == "multiclass":
        return X, (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return X, np.column_stack([X[:, 0] > 0, X[:, 1] > 0, X[:, 2] > 0.3]).astype(int)


@pytest.mark.parametrize(
    "problem,extra",
    [
        ("regression", dict(batch_size=40, weighted=True)),
        ("regression-2", dict(batch_size=10, activation="relu")),
        ("binary", dict(batch_size=40, weighted=True, activation="logistic")),
        ("multiclass", dict(batch_size=10, momentum=0.9)),
        ("multilabel", dict(batch_size=20, activation="identity")),
    ],
    ids=["regression-weighted", "regression-2-outputs-minibatch", "binary-logistic-weighted",
         "multiclass-nesterov-minibatch", "multilabel-identity"],
)  # fmt: skip
def test_one_epoch_matches_sklearn_from_the_same_weights(problem, extra):
    """One epoch of SGD from the same weights gives scikit-learn's weights: the losses and their
    scaling (half squared error, log losses, alpha / (2 n_batch)), the activation names and
    SGD with Nesterov momentum agree."""
    X, y = _problem(problem)
    extra = dict(extra)
    sw = (
        np.random.default_rng(1).uniform(0.5, 2.0, len(X)) if extra.pop("weighted", False) else None
    )
    settings = dict(
        hidden_layer_sizes=(8,), activation="tanh", solver="sgd", momentum=0.0,
        learning_rate_init=0.2, alpha=0.7, max_iter=1, shuffle=False, warm_start=True,
        random_state=0,
    )  # fmt: skip
    settings.update(extra)
    regression = problem.startswith("regression")
    ours = (MLPRegressor if regression else MLPClassifier)(**settings)
    theirs = (neural_network.MLPRegressor if regression else neural_network.MLPClassifier)(
        **settings
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X, y, sample_weight=sw)
        theirs.fit(X, y, sample_weight=sw)
        # Both continue (warm_start) from our weights, each with a fresh optimizer.
        theirs.coefs_ = [w.astype(np.float64) for w in ours.coefs_]
        theirs.intercepts_ = [b.astype(np.float64) for b in ours.intercepts_]
        start = ours.coefs_[0].copy()
        ours.fit(X, y, sample_weight=sw)
        theirs.fit(X, y, sample_weight=sw)
    assert (ours.out_activation_, ours.n_outputs_) == (theirs.out_activation_, theirs.n_outputs_)
    assert np.abs(ours.coefs_[0] - start).max() > 1e-3  # the epoch moved the weights
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if problem != "regression-2":
        # scikit-learn reports 0.5 * mean over outputs while stepping on the sum over them; we
        # report the sum we step on. One output: the same number.
        np.testing.assert_allclose(ours.loss_curve_[-1], theirs.loss_curve_[-1], rtol=1e-5)


# -- accuracy next to scikit-learn ---------------------------------------------------------------
def test_iris_accuracy_comparable_to_sklearn(iris):
    X_train, X_test, y_train, y_test = iris
    settings = {**SMALL, "max_iter": 200}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**settings).fit(X_train, y_train)
        theirs = neural_network.MLPClassifier(**settings).fit(X_train, y_train)
    assert ours.score(X_test, y_test) >= 0.9
    assert theirs.score(X_test, y_test) >= 0.9
    assert abs(ours.score(X_test, y_test) - theirs.score(X_test, y_test)) <= 0.07


@pytest.mark.slow
def test_digits_accuracy_comparable_to_sklearn():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    # 1347 rows: minibatches of 200 (the estimator checks shuffle them; here they are kept in
    # order, which compiles faster).
    settings = dict(
        hidden_layer_sizes=(32,),
        learning_rate_init=0.01,
        max_iter=20,
        shuffle=False,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(**settings).fit(X_train, y_train)
        theirs = neural_network.MLPClassifier(**settings).fit(X_train, y_train)
    assert ours.score(X_test, y_test) >= 0.93
    assert theirs.score(X_test, y_test) >= 0.93
    assert ours.n_iter_ == 20 and ours.t_ == 20 * len(X_train)


@pytest.mark.slow
def test_diabetes_r2():
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    model = make_pipeline(
        StandardScaler(),
        MLPRegressor(
            hidden_layer_sizes=(8,), learning_rate_init=0.1, max_iter=200,
            batch_size=len(X_train), random_state=0,
        ),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, y_train)
    assert model.score(X_test, y_test) >= 0.3
    assert model.predict(X_test).shape == (len(X_test),)


# -- behaviour -----------------------------------------------------------------------------------
def test_manual_and_autodiff_give_the_same_loss_curve(iris):
    X_train, _, y_train, _ = iris
    curves = {}
    for method in ("manual", "autodiff"):
        est = MLPClassifier(**{**SMALL, "max_iter": 40, "tol": 0.0, "gradient_method": method})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            curves[method] = np.array(est.fit(X_train, y_train).loss_curve_)
    assert len(curves["manual"]) == 40
    np.testing.assert_allclose(curves["manual"], curves["autodiff"], rtol=1e-5)
    assert curves["manual"][-1] < 0.6 * curves["manual"][0]


def _fit_quietly(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


def test_string_and_noncontiguous_labels_round_trip(iris):
    X_train, X_test, y_train, _ = iris
    for labels in (np.array(["setosa", "versicolor", "virginica"])[y_train], 3 * y_train**2 + 7):
        est = _fit_quietly(MLPClassifier(**SMALL), X_train, labels)
        np.testing.assert_array_equal(est.classes_, np.unique(labels))
        pred = est.predict(X_test)
        assert pred.dtype == labels.dtype and set(pred) <= set(labels)
        proba = est.predict_proba(X_test)
        assert proba.shape == (len(X_test), 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(est.classes_[proba.argmax(axis=1)], pred)
        np.testing.assert_allclose(est.predict_log_proba(X_test), np.log(proba), rtol=1e-10)
        assert est.score(X_train, labels) > 0.8


def test_binary_uses_one_sigmoid_output(iris):
    X_train, X_test, y_train, _ = iris
    y = np.where(y_train == 0, "a", "b")
    est = _fit_quietly(MLPClassifier(**SMALL), X_train, y)
    assert est.n_outputs_ == 1 and est.out_activation_ == "logistic"
    assert est.coefs_[-1].shape == (8, 1)
    proba = est.predict_proba(X_test)
    np.testing.assert_allclose(proba[:, 0], 1 - proba[:, 1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(est.predict_log_proba(X_test), np.log(proba), rtol=1e-10)
    np.testing.assert_array_equal(
        est.predict(X_test), np.array(["a", "b"])[(proba[:, 1] > 0.5) * 1]
    )
    # One full batch an epoch from scikit-learn's initial weights (the same random state, draw
    # for draw) with its Adam: scikit-learn's own run, to float64 rounding.
    theirs = _fit_quietly(neural_network.MLPClassifier(**SMALL), X_train, y)
    np.testing.assert_allclose(est.loss_curve_, theirs.loss_curve_, rtol=1e-9)
    assert est.score(X_train, y) == theirs.score(X_train, y)


def test_multilabel_uses_sigmoid_outputs():
    X, Y = make_multilabel_classification(n_samples=120, n_features=4, n_classes=3, random_state=0)
    X = StandardScaler().fit_transform(X)
    est = _fit_quietly(MLPClassifier(**{**SMALL, "max_iter": 300}), X, Y)
    assert est.out_activation_ == "logistic" and est.n_outputs_ == 3
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])
    pred = est.predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    proba = est.predict_proba(X)
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert np.mean(pred == Y) > 0.8  # scikit-learn's MLPClassifier: 0.88


def test_partial_fit_needs_classes_then_learns(iris):
    X_train, _, y_train, _ = iris
    est = MLPClassifier(**SMALL)
    with pytest.raises(ValueError, match="classes must be passed"):
        est.partial_fit(X_train, y_train)
    for _ in range(40):
        est.partial_fit(X_train, y_train, classes=[0, 1, 2])
    np.testing.assert_array_equal(est.classes_, [0, 1, 2])
    assert len(est.loss_curve_) == 40 and est.n_iter_ == 1 and est.t_ == 40 * len(X_train)
    assert est.loss_curve_[-1] < 0.6 * est.loss_curve_[0]
    assert est.score(X_train, y_train) > 0.85
    with pytest.raises(ValueError, match="not in"):
        est.partial_fit(X_train[:5], np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="differs from classes_"):
        est.partial_fit(X_train, y_train, classes=[0, 1])


def test_partial_fit_continues_the_optimizer_state():
    """Epochs of partial_fit equal an uninterrupted fit's epochs: Adam's moments carry over."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 4))
    y = X[:, 0] - 2 * X[:, 1]
    settings = dict(hidden_layer_sizes=(8,), shuffle=False, batch_size=16, random_state=0)
    fitted = MLPRegressor(max_iter=3, tol=0.0, **settings)
    with pytest.warns(ConvergenceWarning):
        fitted.fit(X, y)
    stepped = MLPRegressor(**settings)
    for _ in range(3):
        stepped.partial_fit(X, y)
    np.testing.assert_allclose(stepped.loss_curve_, fitted.loss_curve_, rtol=1e-5)
    for a, b in zip(
        stepped.coefs_ + stepped.intercepts_, fitted.coefs_ + fitted.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_warm_start_continues_and_cold_start_resets(iris):
    X_train, _, y_train, _ = iris
    est = MLPClassifier(**{**SMALL, "max_iter": 10, "tol": 0.0, "warm_start": True})
    first = list(_fit_quietly(est, X_train, y_train).loss_curve_)
    _fit_quietly(est, X_train, y_train)
    assert est.loss_curve_[:10] == first and len(est.loss_curve_) == 20
    assert est.loss_curve_[10] < first[-1]  # continued from the trained weights
    assert est.t_ == 20 * len(X_train)
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X_train, np.where(y_train == 2, 1, y_train))
    _fit_quietly(est.set_params(warm_start=False), X_train, y_train)
    assert est.loss_curve_ == first


def test_convergence_warning_and_tol_stopping(iris):
    X_train, _, y_train, _ = iris
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(5\) reached"):
        MLPClassifier(**{**SMALL, "max_iter": 5}).fit(X_train, y_train)
    est = MLPClassifier(**{**SMALL, "max_iter": 200, "tol": 0.05, "n_iter_no_change": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est.fit(X_train, y_train)
    # scikit-learn's rule: stopped after n_iter_no_change + 1 = 3 epochs in a row that each beat
    # the best loss before them by less than tol, the epoch before them by more.
    curve = np.array(est.loss_curve_)
    best_before = np.minimum.accumulate(curve)[:-1]
    assert 4 < est.n_iter_ < 200
    assert np.all(curve[-3:] > best_before[-3:] - 0.05)
    assert curve[-4] <= best_before[-4] - 0.05
    assert est.best_loss_ == curve.min()


def test_early_stopping_monitors_a_validation_split(iris):
    X_train, _, y_train, _ = iris
    est = MLPClassifier(
        **{**SMALL, "max_iter": 300, "early_stopping": True, "validation_fraction": 0.2,
           "n_iter_no_change": 5, "activation": "gelu"},
    )  # fmt: skip
    est.fit(X_train, y_train)
    assert (
        est._model(dtype=np.float32).activation == "gelu"
    )  # jaxmlp's own activation names work too
    assert est.best_loss_ is None
    assert len(est.validation_scores_) == est.n_iter_ < 300
    assert all(0.0 <= s <= 1.0 for s in est.validation_scores_)
    assert est.best_validation_score_ >= 0.8
    assert est.t_ == est.n_iter_ * (len(X_train) - 21)  # ceil(0.2 * 105) rows held out
    with pytest.raises(ValueError, match="early_stopping"):
        est.partial_fit(X_train, y_train)


def test_pickle_round_trip_gives_identical_predictions(iris):
    X_train, X_test, y_train, _ = iris
    est = _fit_quietly(MLPClassifier(**SMALL), X_train, y_train)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.predict_proba(X_test), est.predict_proba(X_test))
    assert all(type(w) is np.ndarray for w in copy.coefs_ + copy.intercepts_)
    # The optimizer state survives too: both continue identically.
    est.partial_fit(X_train, y_train)
    copy.partial_fit(X_train, y_train)
    np.testing.assert_array_equal(copy.coefs_[0], est.coefs_[0])


def test_reproducible_float32_and_fitted_attributes(iris):
    X_train, _, y_train, _ = iris
    X_train = X_train.astype(np.float32)
    a = _fit_quietly(MLPClassifier(**SMALL), X_train, y_train)
    b = _fit_quietly(MLPClassifier(**SMALL), X_train, y_train)
    c = _fit_quietly(MLPClassifier(**{**SMALL, "random_state": 1}), X_train, y_train)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])
    assert [w.shape for w in a.coefs_] == [(4, 8), (8, 3)]
    assert [i.shape for i in a.intercepts_] == [(8,), (3,)]
    assert all(w.dtype == np.float32 for w in a.coefs_)
    assert (a.n_layers_, a.n_outputs_, a.out_activation_, a.n_features_in_) == (3, 3, "softmax", 4)
    assert a.t_ == a.n_iter_ * len(X_train) and a.loss_ == a.loss_curve_[-1]
    assert a.predict_proba(X_train).dtype == np.float32


def test_refits_on_nearby_sizes_reuse_compiled_programs(iris):
    X_train, _, y_train, _ = iris
    est = _fit_quietly(MLPClassifier(**SMALL), X_train, y_train)
    before = dict(TRACE_COUNTS)
    _fit_quietly(clone(est), X_train, y_train)
    _fit_quietly(clone(est), X_train[:-30], y_train[:-30])  # 75 rows pad to the same 128
    _fit_quietly(clone(est), X_train[:, :3], y_train)  # 3 features pad to the same 32
    assert TRACE_COUNTS == before


def test_clone_pipeline_and_grid_search(iris):
    X_train, X_test, y_train, y_test = iris
    est = MLPClassifier(**SMALL)
    assert clone(est).get_params() == est.get_params()
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), est), {"mlpclassifier__max_iter": [20, 200]}, cv=3
    )
    _fit_quietly(grid, X_train, y_train)
    assert grid.best_params_["mlpclassifier__max_iter"] == 200
    assert grid.score(X_test, y_test) >= 0.9


@pytest.mark.parametrize(
    "params,match",
    [
        ({"learning_rate": "cosine"}, "learning_rate"),
        ({"n_iter_no_change": 0.5}, "n_iter_no_change"),
        ({"activation": "swish!"}, "activation"),
        ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes"),
        ({"alpha": -1.0}, "alpha"),
        ({"batch_size": 0}, "batch_size"),
        ({"gradient_method": "numeric"}, "gradient_method"),
        ({"max_iter": 0}, "max_iter"),
    ],
    ids=[
        "learning_rate",
        "n_iter_no_change",
        "activation",
        "hidden",
        "alpha",
        "batch_size",
        "gradient_method",
        "max_iter",
    ],
)
def test_invalid_hyperparameters_raise_in_fit(iris, params, match):
    X_train, _, y_train, _ = iris
    est = MLPClassifier(**{**SMALL, **params})  # __init__ only stores; fit checks
    with pytest.raises(ValueError, match=match):
        est.fit(X_train, y_train)


def test_feature_names_from_a_dataframe(iris):
    pd = pytest.importorskip("pandas")
    X_train, X_test, y_train, _ = iris
    frame = pd.DataFrame(X_train, columns=["a", "b", "c", "d"])
    est = _fit_quietly(MLPClassifier(**SMALL), frame, y_train)
    np.testing.assert_array_equal(est.feature_names_in_, ["a", "b", "c", "d"])
    with pytest.warns(UserWarning, match="feature names"):
        est.predict(X_test)


# -- issue 19: scikit-learn's schedules, stopping rules, solvers and inputs -----------------------
@pytest.mark.parametrize(
    "extra",
    [
        dict(learning_rate="constant", momentum=0.9, nesterovs_momentum=True),
        dict(learning_rate="invscaling", power_t=0.25, momentum=0.9, nesterovs_momentum=False),
        dict(learning_rate="adaptive", tol=0.05, n_iter_no_change=2, momentum=0.5),
        dict(solver="adam", early_stopping=True, validation_fraction=0.25, n_iter_no_change=3),
    ],
    ids=["constant-nesterov", "invscaling", "adaptive", "adam-early-stopping"],
)
def test_epochs_match_sklearn_from_its_own_initialisation(iris, extra):
    """Same random_state, same initial weights (scikit-learn's draws), one full batch an epoch:
    the loss curve, the stopping epoch, the learning rate and the weights are scikit-learn's."""
    X_train, _, y_train, _ = iris
    settings = {**dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.05,
                       max_iter=60, random_state=3), **extra}  # fmt: skip
    ours = _fit_quietly(MLPClassifier(**settings), X_train, y_train)
    theirs = _fit_quietly(neural_network.MLPClassifier(**settings), X_train, y_train)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-8)
    if ours.solver == "sgd":  # (Adam's shows its bias-corrected step size in scikit-learn)
        assert ours._optimizer.learning_rate == pytest.approx(theirs._optimizer.learning_rate)
    assert ours._no_improvement_count == theirs._no_improvement_count
    if ours.early_stopping:
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
        assert ours.best_validation_score_ == theirs.best_validation_score_
    for a, b in zip(
        ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_, strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_lbfgs_reaches_sklearn_lbfgs_objective(iris):
    X_train, X_test, y_train, y_test = iris
    settings = dict(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=300, random_state=0)
    ours = _fit_quietly(MLPClassifier(**settings), X_train, y_train)
    theirs = _fit_quietly(neural_network.MLPClassifier(**settings), X_train, y_train)
    assert not hasattr(ours, "partial_fit") and not hasattr(ours, "loss_curve_")
    assert ours.loss_ <= 1.05 * theirs.loss_ + 1e-4
    assert ours.score(X_test, y_test) >= theirs.score(X_test, y_test) - 0.05
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPClassifier(**{**settings, "max_iter": 2}).fit(X_train, y_train)


def test_dtypes_follow_the_input_and_sparse_equals_dense(iris):
    sparse = pytest.importorskip("scipy.sparse")
    X_train, X_test, y_train, _ = iris
    for dtype in (np.float32, np.float64):
        est = _fit_quietly(MLPRegressor(**SMALL), X_train.astype(dtype), y_train.astype(float))
        assert all(w.dtype == dtype for w in est.coefs_ + est.intercepts_)
        assert est.predict(X_test.astype(dtype)).dtype == dtype
    assert not jax.config.values["jax_enable_x64"]  # only enabled while fitting and predicting
    dense = _fit_quietly(MLPClassifier(**SMALL), X_train, y_train)
    csr = _fit_quietly(MLPClassifier(**SMALL), sparse.csr_matrix(X_train), y_train)
    np.testing.assert_array_equal(csr.coefs_[0], dense.coefs_[0])
    np.testing.assert_array_equal(
        csr.predict_proba(sparse.csc_matrix(X_test)), dense.predict_proba(X_test)
    )


# --- l1 (issue 15: the Playground's L1 in the estimators) ---------------------------------------


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_l1_shrinks_the_weights_for_every_solver(solver):
    from sklearn.datasets import make_classification

    X, y = make_classification(200, 8, random_state=0)
    kw = dict(hidden_layer_sizes=(12,), solver=solver, max_iter=30, random_state=0)
    if solver == "adam":  # enough steps for the penalty to tell: 300 steps of 0.01
        kw.update(batch_size=20, learning_rate_init=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 30 epochs/iterations
        plain = MLPClassifier(**kw).fit(X, y)
        sparse = MLPClassifier(**kw, l1=0.5).fit(X, y)
    size = lambda est: sum(float(np.abs(w).sum()) for w in est.coefs_)  # noqa: E731
    assert plain.get_params()["l1"] == 0.0 and sparse.get_params()["l1"] == 0.5
    assert size(sparse) < 0.95 * size(plain)


def test_l1_gradient_is_the_same_for_both_methods_and_refuses_negative():
    from sklearn.datasets import make_regression

    X, y = make_regression(64, 5, random_state=1)
    kw = dict(hidden_layer_sizes=(6,), solver="lbfgs", max_iter=3, random_state=0, l1=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manual = MLPRegressor(**kw).fit(X, y)
        auto = MLPRegressor(**kw, gradient_method="autodiff").fit(X, y)
    packed = np.concatenate(
        [w.ravel() for w in manual.coefs_] + [b.ravel() for b in manual.intercepts_]
    )
    packed[0] = 0.0  # a weight at exactly 0: both take |w|'s derivative there as 0
    v_m, g_m = manual._loss_grad_lbfgs(packed, X, y, None)
    v_a, g_a = auto._loss_grad_lbfgs(packed, X, y, None)
    np.testing.assert_allclose(v_m, v_a, rtol=1e-6)
    np.testing.assert_allclose(g_m, g_a, rtol=1e-5, atol=1e-6 * np.max(np.abs(g_a)))
    with pytest.raises(ValueError, match=r"^l1"):
        MLPRegressor(l1=-1.0).fit(X, y)
