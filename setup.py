"""The package list: bundler's packages plus recipes/, shipped as `bundler.recipe_scripts`
so that a non-editable install has the recipes (bundler.recipe.recipes_dir finds them)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["bundler", "bundler.*"]), "bundler.recipe_scripts"],
    package_dir={"bundler.recipe_scripts": "recipes"},
)
